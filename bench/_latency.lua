-- prints "JSON <p50 us> <p99 us>" for the Python side to parse
done = function(summary, latency, requests)
  io.write(string.format("JSON %d %d\n", latency:percentile(50), latency:percentile(99)))
end
