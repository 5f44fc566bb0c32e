"""broker/identity"""
