"""bench/run's modules: one per case (throughput, memory, hitratio, openloop), plus the servers and
tools they drive (servers, protocol, resp), the results model (report) and machine set-up (prepare)."""
