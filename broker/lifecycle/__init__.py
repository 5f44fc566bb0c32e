"""broker/lifecycle"""
