"""The chat: the conversation and its settings, fitting it into the context, the session that streams replies, and the journal and transcripts that keep every word on disk."""
