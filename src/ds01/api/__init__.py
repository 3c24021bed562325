"""ds01.api"""
