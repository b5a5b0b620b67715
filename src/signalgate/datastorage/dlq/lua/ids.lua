-- Stream id <-> sorted-set member, prepended to every other script. Padding makes the members'
-- byte order (the order of equal scores) the ids' numeric order: "1-10" sorts before "1-9",
-- the padded forms do not.
local function member(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
local function stream_id(m)
  local ms, seq = string.match(m, '^0*(%d+)%-0*(%d+)$')
  return ms .. '-' .. seq
end
