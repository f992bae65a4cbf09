# walship sidecar image: a static binary on a minimal base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# scripts/build links statically (cgo for libzstd, object/zstd_cgo.go, with glibc's libc.a), so the
# image needs no libc; see it for the tags.
RUN WALSHIP_LDFLAGS="-s -w -X main.version=${VERSION}" bash scripts/build /out/walship

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/walship /usr/local/bin/walship
USER nonroot
ENTRYPOINT ["/usr/local/bin/walship"]
