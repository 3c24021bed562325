"""ds01.runtime"""
