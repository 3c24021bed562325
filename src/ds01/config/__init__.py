"""ds01.config"""
