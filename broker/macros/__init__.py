"""broker/macros"""
