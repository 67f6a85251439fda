# syntax=docker/dockerfile:1
# till as a small, static, non-root image. Config, vault and key are mounted:
#   /etc/till/till.yaml       (read-only)
#   /var/lib/till/till.vault  and till.key (or TILL_PASSPHRASE)
# No secret is ever copied into a layer.

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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/till /usr/local/bin/till
ENV TILL_CONFIG=/etc/till/till.yaml
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/till"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
