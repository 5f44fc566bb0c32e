"""broker/realtime"""
