"""broker/persistence"""
