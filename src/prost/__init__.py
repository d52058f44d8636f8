"""prost: an event-driven e-commerce backend."""
