"""Everything eBay-specific: the profile now; the Identity call and notifications next."""
