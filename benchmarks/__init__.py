"""Benchmarks: throughput / latency / memory measurements that print ratios against a stated baseline."""
