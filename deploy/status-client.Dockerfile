# status-client: a scratch image holding one statically linked binary, CA certificates and a
# non-root user. Built by deploy/build-images.sh from the context it assembles (no registry needed).
# The default command is the long-running HTTP gateway; the CLI subcommands work through
# `docker exec <container> status-client get ID` as well.
FROM scratch
COPY etc/passwd etc/group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY status-client /usr/local/bin/status-client
USER 10001:10001
ENV STATUS_CLIENT_HTTP_ADDR=0.0.0.0:8080 \
    LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/status-client"]
CMD ["serve"]
