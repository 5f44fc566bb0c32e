"""broker/mail"""
