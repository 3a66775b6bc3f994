"""Every Redis command Bandwagon issues: the key schema (`keys`), the published layout that
`init` reads and refreshes write (`published`), a bot's state and frozen config (`bot_state`),
partition ownership and fenced commits (`partitions`, `leases`), market terms (`market_terms`),
which redis-server is answering (`server`) and the client settings (`client`). Nothing outside
this package and the services' wiring talks to Redis."""
