// Package synapse talks to Synapse itself: its admin API (this file) and, for later
// operations, its database.
package synapse

import (
	"context"
	"fmt"
	"net/http"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/synapseadmin"
)

// Admin is Synapse's admin API, called with the bot's (server admin) access token.
// It embeds mautrix-go's synapseadmin client and adds the endpoints that client lacks.
type Admin struct {
	*synapseadmin.Client
}

func NewAdmin(cli *mautrix.Client) *Admin {
	return &Admin{Client: &synapseadmin.Client{Client: cli}}
}

type respServerVersion struct {
	ServerVersion string `json:"server_version"`
}

// ServerVersion returns Synapse's version string (GET /_synapse/admin/v1/server_version,
// which needs no authentication, so it works before the bot has logged in).
func (a *Admin) ServerVersion(ctx context.Context) (string, error) {
	var resp respServerVersion
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodGet, a.BuildAdminURL("v1", "server_version"), nil, &resp)
	if err != nil {
		return "", fmt.Errorf("get server_version: %w", err)
	}
	return resp.ServerVersion, nil
}
