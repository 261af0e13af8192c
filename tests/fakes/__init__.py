"""Local fakes of hosted platforms (Reddit, Mastodon, Bluesky Jetstream, X) speaking their documented APIs.

Each fake is an ASGI app served on loopback by :class:`Served`; it records what clients asked for
and can answer with rate limits (429) and drop connections, so the real client libraries'
error paths run.
"""
