"""broker/reservations"""
