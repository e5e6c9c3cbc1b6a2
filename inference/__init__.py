"""pplx.inference: the engines that fit Pyro models, and the one Result type they return."""
