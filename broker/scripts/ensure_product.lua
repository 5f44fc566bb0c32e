-- ensure_product: the product a key names (its product_uid, else its name), created when there
-- is none, atomically: two concurrent calls for one new product create it once. Products are
-- global, not per project: their keys share the hash tag {#products} (never a slug's).
-- KEYS[1]  HASH product_uid -> product JSON {id, product_uid, name, created_at}
-- KEYS[2]  HASH name -> product_uid
-- KEYS[3]  STRING the last product id given
-- ARGV[1]  key to look up (a product_uid or a name)
-- ARGV[2]  product_uid for a new product (lowercased key if it looks like one, else random)
-- ARGV[3]  name for a new product
-- ARGV[4]  most products the broker holds
-- Returns {"ok", product JSON, 1 if this call created it else 0}, {"NAME_TAKEN", product JSON}
-- (the new name belongs to another product) or {"TOO_MANY", count} (nothing written).
-- @include lib/common.lua
local found = redis.call("HGET", KEYS[1], ARGV[1])
if not found then
  local uid = redis.call("HGET", KEYS[2], ARGV[1])
  if uid then found = redis.call("HGET", KEYS[1], uid) end
end
if not found then found = redis.call("HGET", KEYS[1], ARGV[2]) end
if found then return {"ok", found, 0} end
local owner = redis.call("HGET", KEYS[2], ARGV[3])
if owner then return {"NAME_TAKEN", redis.call("HGET", KEYS[1], owner)} end
local count = redis.call("HLEN", KEYS[1])
if count >= tonumber(ARGV[4]) then return {"TOO_MANY", count} end
local iso = now()
local product = cjson.encode({id = redis.call("INCR", KEYS[3]), product_uid = ARGV[2], name = ARGV[3], created_at = iso})
redis.call("HSET", KEYS[1], ARGV[2], product)
redis.call("HSET", KEYS[2], ARGV[3], ARGV[2])
return {"ok", product, 1}
