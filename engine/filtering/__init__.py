"""Step 1b of the method: the paper's filter rules over sampled paths, their stage, and what they leave."""
