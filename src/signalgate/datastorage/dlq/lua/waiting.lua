-- Which events wait in a live letter. KEYS due, events, stream; ARGV event ids.
-- Returns (event id, due, correlation id) of those held by a live letter; the correlation id
-- is '' for a letter whose event cannot be read (the replay buries it).
local found = {}
for _, event_id in ipairs(ARGV) do
  local id = redis.call('HGET', KEYS[2], event_id)
  if id then
    local due = redis.call('ZSCORE', KEYS[1], member(id))
    if due then
      local correlation = ''
      local entry = redis.call('XRANGE', KEYS[3], id, id)[1]
      if entry then
        local fields = entry[2]
        for i = 1, #fields, 2 do
          if fields[i] == 'event' then
            local ok, event = pcall(cjson.decode, fields[i + 1])
            if ok and type(event) == 'table' and type(event.correlation_id) == 'string' then
              correlation = event.correlation_id
            end
          end
        end
      end
      found[#found + 1] = event_id
      found[#found + 1] = due
      found[#found + 1] = correlation
    end
  end
end
return found
