# Synapse Medic image. Build: docker build -t synapse-medic .
# Run:   docker run -v $PWD/config.yaml:/config/config.yaml:ro -v medic-data:/data synapse-medic
# In the config set data_dir: /data (the image's default config path is /config/config.yaml).
# Monitoring: metrics.listen: 0.0.0.0:9330 in the config and -p 127.0.0.1:9330:9330 (/healthz,
# /ready, /metrics).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# cgo stays on for the SQLite store (mattn/go-sqlite3); goolm is pure-Go Olm.
RUN CGO_ENABLED=1 go build -trimpath -tags goolm \
      -ldflags "-s -w -X main.Version=${VERSION}" -o /out/medic ./cmd/medic
# The auth checker for !unreject needs GOEXPERIMENT=jsonv2 (mautrix-go's federation/pdu);
# medic itself must not have it (see the Makefile).
RUN GOEXPERIMENT=jsonv2 CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/medic-authcheck ./cmd/medic-authcheck

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data medic \
 && mkdir -p /data /config && chown medic /data
COPY --from=build /out/medic /out/medic-authcheck /usr/local/bin/
USER medic
VOLUME ["/data", "/config"]
# metrics.listen, when set to 0.0.0.0:9330
EXPOSE 9330
ENTRYPOINT ["/usr/local/bin/medic"]
CMD ["run", "-c", "/config/config.yaml"]
