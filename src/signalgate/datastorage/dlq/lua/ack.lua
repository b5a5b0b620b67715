-- Remove replayed letters. KEYS stream, due, events; ARGV (stream id, event id) per letter.
-- Each change deletes the old entry first and acts only if it was still there, so two
-- replicas acting on the same letter never duplicate it (nor lose it) in the queue; the
-- indexes change in the same script, so they follow the stream exactly.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], member(ARGV[i]))
    if redis.call('HGET', KEYS[3], ARGV[i + 1]) == ARGV[i] then
      redis.call('HDEL', KEYS[3], ARGV[i + 1])
    end
    removed = removed + 1
  end
end
return removed
