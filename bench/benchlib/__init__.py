"""bench/run's modules: one per case (throughput, memory, hitratio, openloop, replication), plus the
servers and tools they drive (servers, protocol, resp, ackclient), the results model (report) and
machine set-up (prepare)."""
