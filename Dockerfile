# walship sidecar image: a static binary on a minimal base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/walship ./cmd/walship

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/walship /usr/local/bin/walship
USER nonroot
ENTRYPOINT ["/usr/local/bin/walship"]
