"""From prompt to tokens to text: chat templates, tokens, the one generation loop, sampling, detokenizing, and greedy-against-sampled comparison."""
