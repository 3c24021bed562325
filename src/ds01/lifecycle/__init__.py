"""ds01.lifecycle"""
