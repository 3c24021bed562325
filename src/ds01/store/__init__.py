"""ds01.store"""
