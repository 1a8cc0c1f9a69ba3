"""Test equipment that ships with tokend: the eBay simulator behind the demo, the tests
and the benchmarks, and a loopback proxy in front of PostgreSQL that plays its faults."""
