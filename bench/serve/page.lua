-- The serving benchmark's 3-slot page (bench/serve -bench, its page phase): the same context and 20
-- actions as rank.lua's request, ranked as a page of three slots with small features of their own, one
-- with a baseline action and one excluding two actions; model "page" (interactions [user, item] and
-- [slot, item], as docs/operations.md "Ranking a page" advises). bench/loadgen sends wrk.body; the file
-- is still a wrk script (rank.lua's reporting) for manual runs.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"page","context":{"user":{"segment":"b","age":31,"country":"fr","device":"ios","tags":["x","y"]}},"actions":[{"id":"a0","features":{"item":{"id":"i0","category":"c0","price":0.99,"new":true}}},{"id":"a1","features":{"item":{"id":"i1","category":"c1","price":2.49,"new":false}}},{"id":"a2","features":{"item":{"id":"i2","category":"c2","price":3.99,"new":false}}},{"id":"a3","features":{"item":{"id":"i3","category":"c3","price":5.49,"new":true}}},{"id":"a4","features":{"item":{"id":"i4","category":"c4","price":6.99,"new":false}}},{"id":"a5","features":{"item":{"id":"i5","category":"c0","price":8.49,"new":false}}},{"id":"a6","features":{"item":{"id":"i6","category":"c1","price":9.99,"new":true}}},{"id":"a7","features":{"item":{"id":"i7","category":"c2","price":11.49,"new":false}}},{"id":"a8","features":{"item":{"id":"i8","category":"c3","price":12.99,"new":false}}},{"id":"a9","features":{"item":{"id":"i9","category":"c4","price":14.49,"new":true}}},{"id":"a10","features":{"item":{"id":"i10","category":"c0","price":15.99,"new":false}}},{"id":"a11","features":{"item":{"id":"i11","category":"c1","price":17.49,"new":false}}},{"id":"a12","features":{"item":{"id":"i12","category":"c2","price":18.99,"new":true}}},{"id":"a13","features":{"item":{"id":"i13","category":"c3","price":20.49,"new":false}}},{"id":"a14","features":{"item":{"id":"i14","category":"c4","price":21.99,"new":false}}},{"id":"a15","features":{"item":{"id":"i15","category":"c0","price":23.49,"new":true}}},{"id":"a16","features":{"item":{"id":"i16","category":"c1","price":24.99,"new":false}}},{"id":"a17","features":{"item":{"id":"i17","category":"c2","price":26.49,"new":false}}},{"id":"a18","features":{"item":{"id":"i18","category":"c3","price":27.99,"new":true}}},{"id":"a19","features":{"item":{"id":"i19","category":"c4","price":29.49,"new":false}}}],"slots":[{"id":"hero","features":{"size":"large","position":1},"baseline_action":"a1"},{"id":"side","features":{"size":"small","position":2},"excluded_actions":["a0","a7"]},{"id":"footer","features":{"size":"small","position":3}}]}'

local non2xx = 0
response = function(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f, "p999_ms": %.3f, "errors": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
