"""L3: what every component uses to talk to the API server: REST client, informers, workqueue."""
