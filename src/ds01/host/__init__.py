"""ds01.host"""
