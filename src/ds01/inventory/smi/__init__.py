"""ds01.inventory.smi"""
