-- Queue letters. KEYS stream, due, events; ARGV due, then (event id, event JSON) per event.
for i = 2, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i + 1], 'attempts', '0',
                        'due', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], member(id))
  redis.call('HSET', KEYS[3], ARGV[i], id)
end
return 1
