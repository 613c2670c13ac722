package synapse

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/synapse-medic/medic/netguard"
)

// LoadSigningKey reads the key file Synapse signs federation requests with
// ("ed25519 a_XXXX <base64 seed>", one key per line; the first is used). It checks the file
// itself because federation.ParseSynapseKey panics on a seed of the wrong length.
func LoadSigningKey(path string) (*federation.SigningKey, error) {
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read signing key: %w (set synapse.signing_key_path to the signing_key_path of Synapse's homeserver.yaml)", err)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read signing key: %w (medic's user must be able to read it: e.g. chmod 640 and add medic's user to the file's group, never a copy)", err)
	case err != nil:
		return nil, fmt.Errorf("read signing key: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 3 || parts[0] != "ed25519" {
			return nil, fmt.Errorf("%s line %d: expected \"ed25519 <key id> <base64 seed>\"", path, n)
		}
		seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(parts[2], "="))
		if err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%s line %d: the seed is not %d bytes of unpadded base64", path, n, ed25519.SeedSize)
		}
		return federation.ParseSynapseKey(strings.Join([]string{parts[0], parts[1], base64.RawStdEncoding.EncodeToString(seed)}, " "))
	}
	return nil, fmt.Errorf("%s: no signing key in the file", path)
}

// NewFederationClient makes a federation client that signs requests as serverName with
// Synapse's own key. Every connection it makes (discovery included) goes through netguard:
// public addresses only; testingLoopback allows loopback and self-signed certificates too
// (the local testbed only).
func NewFederationClient(serverName, keyPath string, testingLoopback bool) (*federation.Client, error) {
	key, err := LoadSigningKey(keyPath)
	if err != nil {
		return nil, err
	}
	settings := exhttp.SensibleClientSettings
	// /state of a big room can take long before the first byte.
	settings.ResponseHeaderTimeout = 2 * time.Minute
	return netguard.Policy{Testing: testingLoopback}.FederationClient(serverName, key, nil, settings), nil
}

// EventRoom asks a server for an event and returns the room it belongs to.
func EventRoom(ctx context.Context, fc *federation.Client, server string, eventID id.EventID) (id.RoomID, error) {
	resp, err := fc.GetEvent(ctx, server, eventID)
	if err != nil {
		return "", err
	}
	if len(resp.PDUs) == 0 {
		return "", fmt.Errorf("%s returned no event", server)
	}
	room := gjson.GetBytes(resp.PDUs[0], "room_id").Str
	if room == "" {
		return "", fmt.Errorf("%s returned an event without room_id", server)
	}
	return id.RoomID(room), nil
}
