"""broker/history"""
