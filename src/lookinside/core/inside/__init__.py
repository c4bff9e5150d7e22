"""The views of the inside: one forward pass and its shapes, the next-token distribution, attention, the logit lens, the architecture, two models side by side, and the interventions."""
