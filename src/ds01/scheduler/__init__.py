"""ds01.scheduler"""
