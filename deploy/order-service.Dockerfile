# order-service: a scratch image holding one statically linked binary, CA certificates and a
# non-root user. Built by deploy/build-images.sh from the context it assembles (no registry needed).
FROM scratch
COPY etc/passwd etc/group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The SQLite database lives here; a named volume mounted on /data copies this ownership on
# first use, so the non-root user can write to it.
COPY --chown=10001:10001 empty/ /data/
COPY order-service /usr/local/bin/order-service
USER 10001:10001
ENV ORDER_SERVICE_ADDR=0.0.0.0:50051 \
    ORDER_SERVICE_DATABASE_URL=sqlite:///data/orders.db \
    LOG_FORMAT=json
EXPOSE 50051
# No shell in the image: the binary checks itself through the gRPC health protocol.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/order-service", "healthcheck", "--addr", "127.0.0.1:50051", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/order-service"]
