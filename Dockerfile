# walship sidecar image: a static binary on a minimal base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# cgo for libzstd (object/zstd_cgo.go: about half the CPU per segment of the pure-Go encoder),
# linked statically so the image needs no libc; netgo and osusergo keep glibc's resolver and
# user lookup out of the static binary; scripts/build-tags are every build's (see scripts/build).
RUN CGO_ENABLED=1 go build -trimpath -tags "netgo,osusergo,$(cat scripts/build-tags)" \
    -ldflags "-s -w -linkmode external -extldflags -static -X main.version=${VERSION}" -o /out/walship ./cmd/walship

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/walship /usr/local/bin/walship
USER nonroot
ENTRYPOINT ["/usr/local/bin/walship"]
