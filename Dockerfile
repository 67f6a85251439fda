# syntax=docker/dockerfile:1
# till as a small, static, non-root image (uid 65532). It reads:
#   /etc/till/till.yaml  the config, mounted read-only
#   /var/lib/till/       a data folder, owned by 65532 and mounted read-write:
#                        the vault, its key (or TILL_PASSPHRASE instead) and
#                        the vault's lock. A folder, not single files: a
#                        rotation renames a new vault over the old one, which
#                        a file bind mount would never show. A new named
#                        volume takes the image folder's owner; a host folder
#                        needs `chown -R 65532:65532` (examples/sidecar-compose).
# No secret is ever copied into a layer: .dockerignore keeps keys, vaults,
# CAs and audit logs out of the build context, build stage included.
# The HEALTHCHECK runs `till health`, which asks the admin listener's /readyz:
# the config needs admin.listen on 127.0.0.1:9090 (or 0.0.0.0:9090), or the
# container reports unhealthy (the gateway listener has no /readyz: it
# routes every path). It names the address rather than read the config, so
# that it asks the running till: an edit till refused (it keeps serving the
# config before) or an admin.listen waiting for a restart changes nothing.

# A patched Go: govulncheck flags net/http and crypto/x509 fixes that
# go1.26.8 lacks (see .ci/run).
FROM golang:1.27-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git stays out of the context, so the commit and its date come as
# arguments (till version prints "unknown" without them):
#   docker build --build-arg COMMIT=$(git rev-parse HEAD) \
#     --build-arg DATE=$(git log -1 --format=%cI) .
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" -o /out/till ./cmd/till
# The data folder, 65532's: copied as an entry of /var/lib/ so that --chown
# applies to the folder itself.
RUN mkdir -p /out/var/lib/till && chmod 700 /out/var/lib/till

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/till /usr/local/bin/till
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
ENV TILL_CONFIG=/etc/till/till.yaml
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/till", "health", "--url", "http://127.0.0.1:9090/readyz"]
ENTRYPOINT ["/usr/local/bin/till"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
