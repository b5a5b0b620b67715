-- Which events wait in a live letter. KEYS due, events; ARGV event ids.
-- Returns (event id, due) of those held by a live letter.
local found = {}
for _, event_id in ipairs(ARGV) do
  local id = redis.call('HGET', KEYS[2], event_id)
  if id then
    local due = redis.call('ZSCORE', KEYS[1], member(id))
    if due then
      found[#found + 1] = event_id
      found[#found + 1] = due
    end
  end
end
return found
