"""ds01.services"""
