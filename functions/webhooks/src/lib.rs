//! webhooks handler (being written)
