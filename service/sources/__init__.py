"""Where items come from besides the HTTP API: brokers whose streams already hold them."""
