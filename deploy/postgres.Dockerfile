# postgres: PostgreSQL 15 from this machine's Debian packages (server binaries, their modules,
# their shared files and every shared library they load, with the dynamic loader), dash as
# /bin/sh for the entrypoint, and the non-root user postgres. Built by
# deploy/build-postgres-image.sh from the root file system it assembles; no registry needed.
FROM scratch
COPY rootfs/ /
# A named volume mounted on /var/lib/postgresql/data copies this ownership on first use; the
# cluster lives in its subdirectory pgdata, which initdb makes with mode 0700.
COPY --chown=999:999 empty/ /var/lib/postgresql/data/
COPY --chown=999:999 empty/ /var/run/postgresql/
USER 999:999
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin \
    PGDATA=/var/lib/postgresql/data/pgdata \
    TZ=UTC
EXPOSE 5432
# SIGTERM would be a "smart" shutdown, which waits for every client (a pool never leaves) until
# docker's SIGKILL; SIGINT is the fast shutdown: clients are cut off, the cluster shuts down clean.
STOPSIGNAL SIGINT
# Accepting connections on TCP, not only the socket: what the replicas need.
HEALTHCHECK --interval=2s --timeout=3s --start-period=60s --retries=5 \
    CMD ["/usr/lib/postgresql/15/bin/pg_isready", "--quiet", "--host", "127.0.0.1", "--port", "5432", "--timeout", "2"]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
