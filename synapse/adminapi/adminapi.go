// Package adminapi is Synapse's admin API (and the bits of its client API medic needs as a
// server admin), over mautrix-go's synapseadmin client.
package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"
)

// Client is Synapse's admin API, called with the bot's (server admin) access token.
// It embeds mautrix-go's synapseadmin client and adds the endpoints that client lacks.
type Client struct {
	*synapseadmin.Client
}

func New(cli *mautrix.Client) *Client {
	return &Client{Client: &synapseadmin.Client{Client: cli}}
}

type respServerVersion struct {
	ServerVersion string `json:"server_version"`
}

// ServerVersion returns Synapse's version string (GET /_synapse/admin/v1/server_version,
// which needs no authentication, so it works before the bot has logged in).
func (a *Client) ServerVersion(ctx context.Context) (string, error) {
	var resp respServerVersion
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodGet, a.BuildAdminURL("v1", "server_version"), nil, &resp)
	if err != nil {
		return "", fmt.Errorf("get server_version: %w", err)
	}
	return resp.ServerVersion, nil
}

// Destination is Synapse's federation retry state for one remote server.
type Destination struct {
	Destination                  string `json:"destination"`
	RetryLastTS                  int64  `json:"retry_last_ts"`
	RetryInterval                int64  `json:"retry_interval"`
	FailureTS                    *int64 `json:"failure_ts"`
	LastSuccessfulStreamOrdering *int64 `json:"last_successful_stream_ordering"`
}

// Failing tells whether Synapse is backing off from the destination.
func (d *Destination) Failing() bool { return d.FailureTS != nil || d.RetryInterval > 0 }

type respDestinations struct {
	Destinations []*Destination `json:"destinations"`
	NextToken    string         `json:"next_token"`
	Total        int            `json:"total"`
}

// Destinations lists every destination Synapse knows (GET …/federation/destinations).
func (a *Client) Destinations(ctx context.Context) ([]*Destination, error) {
	var all []*Destination
	from := "0"
	for {
		var resp respDestinations
		u := a.Client.Client.BuildURLWithQuery(mautrix.SynapseAdminURLPath{"v1", "federation", "destinations"},
			map[string]string{"from": from, "limit": "500", "order_by": "failure_ts", "dir": "b"})
		if _, err := a.Client.Client.MakeRequest(ctx, http.MethodGet, u, nil, &resp); err != nil {
			return nil, fmt.Errorf("list federation destinations: %w", err)
		}
		all = append(all, resp.Destinations...)
		if resp.NextToken == "" || len(resp.Destinations) == 0 {
			return all, nil
		}
		from = resp.NextToken
	}
}

// Destination returns one destination, or nil when Synapse does not know it.
func (a *Client) Destination(ctx context.Context, server string) (*Destination, error) {
	var d Destination
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodGet, a.BuildAdminURL("v1", "federation", "destinations", server), nil, &d)
	if errors.Is(err, mautrix.MNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("get destination %s: %w", server, err)
	}
	return &d, nil
}

// ResetConnection clears Synapse's backoff for a destination
// (POST …/destinations/{d}/reset_connection), which also updates Synapse's caches.
func (a *Client) ResetConnection(ctx context.Context, server string) error {
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodPost,
		a.BuildAdminURL("v1", "federation", "destinations", server, "reset_connection"), struct{}{}, nil)
	// Synapse answers 400 when the retry state is already clear: the goal is reached.
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil && strings.Contains(httpErr.RespError.Err, "does not need to be reset") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset connection to %s: %w", server, err)
	}
	return nil
}

// Extremity is one forward extremity of a room.
type Extremity struct {
	EventID    string `json:"event_id"`
	StateGroup int64  `json:"state_group"`
	Depth      int64  `json:"depth"`
	ReceivedTS int64  `json:"received_ts"`
}

type respExtremities struct {
	Count   int          `json:"count"`
	Results []*Extremity `json:"results"`
}

// ForwardExtremities lists a room's forward extremities (GET …/rooms/{r}/forward_extremities).
func (a *Client) ForwardExtremities(ctx context.Context, room string) ([]*Extremity, error) {
	var resp respExtremities
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodGet, a.BuildAdminURL("v1", "rooms", room, "forward_extremities"), nil, &resp)
	if err != nil {
		return nil, fmt.Errorf("get forward extremities of %s: %w", room, err)
	}
	return resp.Results, nil
}

// DeleteForwardExtremities makes Synapse drop all but the newest forward extremities of a
// room; it updates Synapse's caches itself.
func (a *Client) DeleteForwardExtremities(ctx context.Context, room string) (int, error) {
	var resp struct {
		Deleted int `json:"deleted"`
	}
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodDelete, a.BuildAdminURL("v1", "rooms", room, "forward_extremities"), nil, &resp)
	if err != nil {
		return 0, fmt.Errorf("delete forward extremities of %s: %w", room, err)
	}
	return resp.Deleted, nil
}

// LoginAsUser mints an access token for a local user (POST …/users/{u}/login), valid until
// validUntil. It creates no device. Disabled when Synapse delegates auth to MAS.
func (a *Client) LoginAsUser(ctx context.Context, user id.UserID, validUntil time.Time) (string, error) {
	var resp struct {
		AccessToken string `json:"access_token"`
	}
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodPost, a.BuildAdminURL("v1", "users", user, "login"),
		map[string]any{"valid_until_ms": validUntil.UnixMilli()}, &resp)
	if err != nil {
		return "", fmt.Errorf("log in as %s: %w", user, err)
	}
	return resp.AccessToken, nil
}

// JoinUser makes a local user join a room (POST …/join/{room}), which is not rate limited.
// Synapse needs the room to be public or the admin in it; via names servers in the room.
func (a *Client) JoinUser(ctx context.Context, room id.RoomID, user id.UserID, via []string) error {
	u := a.Client.Client.BuildURLWithFullQuery(mautrix.SynapseAdminURLPath{"v1", "join", room}, func(q url.Values) {
		for _, s := range via {
			q.Add("server_name", s)
		}
	})
	_, err := a.Client.Client.MakeRequest(ctx, http.MethodPost, u, map[string]any{"user_id": user}, nil)
	if err != nil {
		return fmt.Errorf("admin join %s to %s: %w", user, room, err)
	}
	return nil
}

// JoinedOrInvited returns who is joined to or invited into a room medic is in, with their
// membership (GET /rooms/{room}/members with the bot's token: the client API, as the room
// reads to its members).
func (a *Client) JoinedOrInvited(ctx context.Context, room id.RoomID) (map[id.UserID]event.Membership, error) {
	resp, err := a.Client.Client.Members(ctx, room, mautrix.ReqMembers{NotMembership: event.MembershipLeave})
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", room, err)
	}
	members := map[id.UserID]event.Membership{}
	for _, evt := range resp.Chunk {
		if m := evt.Content.AsMember().Membership; evt.StateKey != nil && (m == event.MembershipJoin || m == event.MembershipInvite) {
			members[id.UserID(*evt.StateKey)] = m
		}
	}
	return members, nil
}
