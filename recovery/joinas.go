package recovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// How medic acts as a local user to join them (recover.join_as).
const (
	JoinAuto        = "auto"
	JoinAppservice  = "appservice"
	JoinLoginAsUser = "login_as_user"
)

// JoinMethod is the way a job's users will be joined, with why that way.
type JoinMethod struct {
	Kind string `json:"kind"` // JoinAppservice or JoinLoginAsUser
	Why  string `json:"why"`
}

// AppserviceSenderLocalpart is the appservice's own user: not the bot's password account,
// so the registration never shadows it.
const AppserviceSenderLocalpart = "medic-rejoin"

// registrationFile is what `medic appservice-registration` writes. url is explicitly null:
// medic needs no transactions pushed, and Synapse wants the key present (null, not empty,
// or it would try to push to "").
type registrationFile struct {
	ID              string     `yaml:"id"`
	URL             *string    `yaml:"url"`
	AppToken        string     `yaml:"as_token"`
	ServerToken     string     `yaml:"hs_token"`
	SenderLocalpart string     `yaml:"sender_localpart"`
	RateLimited     bool       `yaml:"rate_limited"`
	Namespaces      namespaces `yaml:"namespaces"`
}

// namespaces is the registration's namespaces (mautrix-go's appservice package has the
// same, but pulls in its transaction server's dependencies).
type namespaces struct {
	Users   []namespace `yaml:"users"`
	Aliases []namespace `yaml:"aliases"`
	Rooms   []namespace `yaml:"rooms"`
}

type namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewRegistration returns an appservice registration (YAML) for serverName: random tokens, a
// sender of its own, a non-exclusive namespace covering every user of the server (so it may
// act as any of them with ?user_id=, and claims none), not rate limited, and no URL.
func NewRegistration(serverName string) ([]byte, error) {
	if serverName == "" {
		return nil, errors.New("homeserver.server_name is empty")
	}
	reg := registrationFile{
		ID: "synapse-medic", AppToken: randomToken(), ServerToken: randomToken(),
		SenderLocalpart: AppserviceSenderLocalpart, RateLimited: false,
		Namespaces: namespaces{Users: []namespace{{Regex: "@.*:" + regexp.QuoteMeta(serverName), Exclusive: false}},
			Aliases: []namespace{}, Rooms: []namespace{}},
	}
	out, err := yaml.Marshal(&reg)
	if err != nil {
		return nil, err
	}
	header := "# Synapse Medic's appservice, for !recover's rejoins (see medic's README).\n" +
		"# Add this file's path to app_service_config_files in homeserver.yaml and restart Synapse.\n" +
		"# It holds secrets: keep it readable by Synapse and medic only.\n"
	return append([]byte(header), out...), nil
}

// LoadAppserviceToken reads the as_token from a registration file.
func LoadAppserviceToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read the appservice registration: %w", err)
	}
	token, err := parseRegistrationToken(raw)
	if err != nil {
		return "", fmt.Errorf("the appservice registration %s: %w", path, err)
	}
	return token, nil
}

// parseRegistrationToken reads the as_token of a registration (YAML, which an admin may
// have edited by hand).
func parseRegistrationToken(raw []byte) (string, error) {
	var reg registrationFile
	if err := yaml.Unmarshal(raw, &reg); err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	if reg.AppToken == "" {
		return "", errors.New("no as_token")
	}
	if strings.ContainsAny(reg.AppToken, " \t\r\n") {
		return "", errors.New("the as_token contains whitespace")
	}
	return reg.AppToken, nil
}

// appserviceClient acts as user with the appservice token (?user_id=).
func (r *Rejoiner) appserviceClient(user string) (*mautrix.Client, error) {
	token, err := LoadAppserviceToken(r.Registration)
	if err != nil {
		return nil, err
	}
	cli, err := mautrix.NewClient(r.HomeserverURL, id.UserID(user), token)
	if err != nil {
		return nil, err
	}
	cli.SetAppServiceUserID = user != ""
	return cli, nil
}

// appserviceWorks tells whether Synapse knows the appservice: whoami with its token answers
// with its sender.
func (r *Rejoiner) appserviceWorks(ctx context.Context) error {
	if r.Registration == "" {
		return errors.New("recover.appservice_registration is not set")
	}
	cli, err := r.appserviceClient("")
	if err != nil {
		return err
	}
	if _, err = cli.Whoami(ctx); err != nil {
		if errors.Is(err, mautrix.MUnknownToken) {
			return fmt.Errorf("Synapse does not know its token: add %s to app_service_config_files in homeserver.yaml and restart Synapse", r.Registration)
		}
		return fmt.Errorf("whoami with its token: %w", err)
	}
	return nil
}

// errLoginAsUserUnavailable is login-as-user answering that it does not exist (Synapse
// delegating authentication to MAS does not register it).
var errLoginAsUserUnavailable = errors.New("Synapse's login-as-user admin API is unavailable")

// loginAsUserWorks probes login-as-user without minting anything: asking it to log the bot
// in as itself gets 400 "Cannot use admin API to login as self" where the API exists.
func (r *Rejoiner) loginAsUserWorks(ctx context.Context) error {
	if mas := r.detectMAS(ctx); mas != "" {
		return fmt.Errorf("%w: Synapse delegates authentication to MAS (%s)", errLoginAsUserUnavailable, mas)
	}
	cli := r.Admin.Client.Client
	_, err := cli.MakeRequest(ctx, http.MethodPost, r.Admin.BuildAdminURL("v1", "users", r.BotUser, "login"), struct{}{}, nil)
	var httpErr mautrix.HTTPError
	switch {
	case err == nil:
		return nil // not expected (it minted a token for the bot itself), but it works
	case errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == http.StatusBadRequest:
		return nil
	case errors.As(err, &httpErr) && httpErr.Response != nil && (httpErr.Response.StatusCode == http.StatusNotFound ||
		httpErr.Response.StatusCode == http.StatusMethodNotAllowed || httpErr.Is(mautrix.MUnrecognized)):
		return fmt.Errorf("%w (it answered %s)", errLoginAsUserUnavailable, shortErr(err))
	case errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode == http.StatusForbidden:
		return fmt.Errorf("login-as-user refused: the bot account is not a Synapse server admin (%s)", shortErr(err))
	default:
		return fmt.Errorf("probe login-as-user: %w", err)
	}
}

// detectMAS says how Synapse shows it delegates authentication to MAS ("" when it does
// not): the auth metadata endpoint (MSC2965), or the client .well-known naming an issuer.
func (r *Rejoiner) detectMAS(ctx context.Context) string {
	cli := r.Admin.Client.Client
	var meta map[string]any
	if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildClientURL("v1", "auth_metadata"), nil, &meta); err == nil && meta["issuer"] != nil {
		return "/_matrix/client/v1/auth_metadata names an issuer"
	}
	// The client .well-known, where Synapse serves it and where clients look for it.
	for _, base := range []string{strings.TrimRight(r.HomeserverURL, "/"), "https://" + r.ServerName} {
		if wellKnownNamesIssuer(ctx, cli.Client, base+"/.well-known/matrix/client") {
			return base + "/.well-known/matrix/client has org.matrix.msc2965.authentication"
		}
	}
	return ""
}

func wellKnownNamesIssuer(ctx context.Context, hc *http.Client, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return err == nil && resp.StatusCode == http.StatusOK &&
		gjson.GetBytes(raw, `org\.matrix\.msc2965\.authentication.issuer`).Exists()
}

// ChooseJoinMethod decides how users will be joined, per recover.join_as: auto takes the
// appservice when its token works, else login-as-user when that API exists. Neither: the
// error says exactly what to do.
func (r *Rejoiner) ChooseJoinMethod(ctx context.Context) (JoinMethod, error) {
	switch r.JoinAs {
	case JoinAppservice:
		if err := r.appserviceWorks(ctx); err != nil {
			return JoinMethod{}, fmt.Errorf("recover.join_as is appservice, but the appservice does not work: %w", err)
		}
		return JoinMethod{Kind: JoinAppservice, Why: "recover.join_as is appservice"}, nil
	case JoinLoginAsUser:
		if err := r.loginAsUserWorks(ctx); err != nil {
			if errors.Is(err, errLoginAsUserUnavailable) {
				return JoinMethod{}, r.stepsForAppservice(err)
			}
			return JoinMethod{}, err
		}
		return JoinMethod{Kind: JoinLoginAsUser, Why: "recover.join_as is login_as_user"}, nil
	}
	asErr := r.appserviceWorks(ctx)
	if asErr == nil {
		return JoinMethod{Kind: JoinAppservice, Why: "the appservice's token works"}, nil
	}
	if err := r.loginAsUserWorks(ctx); err != nil {
		if errors.Is(err, errLoginAsUserUnavailable) {
			return JoinMethod{}, r.stepsForAppservice(fmt.Errorf("%w; appservice: %v", err, asErr))
		}
		return JoinMethod{}, err
	}
	return JoinMethod{Kind: JoinLoginAsUser, Why: "no working appservice (" + asErr.Error() + ")"}, nil
}

// stepsForAppservice is the one answer when no user can be joined: the exact steps to set
// up the appservice, instead of a failure per user.
func (r *Rejoiner) stepsForAppservice(cause error) error {
	return &NoJoinMethodError{Cause: cause}
}

// NoJoinMethodError says medic can join nobody, and how to fix that.
type NoJoinMethodError struct{ Cause error }

func (e *NoJoinMethodError) Error() string {
	return "medic cannot act as local users: " + e.Cause.Error() + ". To rejoin them through an appservice instead:\n" +
		"1. `medic appservice-registration -c config.yaml -o /etc/matrix-synapse/medic-appservice.yaml` (on the host; it holds secrets, keep it readable by Synapse and medic only)\n" +
		"2. in homeserver.yaml: `app_service_config_files: [/etc/matrix-synapse/medic-appservice.yaml]` (add to the list if there is one)\n" +
		"3. restart Synapse\n" +
		"4. in medic's config: `recover: {join_as: auto, appservice_registration: /etc/matrix-synapse/medic-appservice.yaml}`, then run the command again"
}

func (e *NoJoinMethodError) Unwrap() error { return e.Cause }

// JoinMethodStatus is the health check's line: which way users would be joined now, and
// whether neither works.
func (r *Rejoiner) JoinMethodStatus(ctx context.Context) (string, bool) {
	m, err := r.ChooseJoinMethod(ctx)
	if err != nil {
		var none *NoJoinMethodError
		if errors.As(err, &none) {
			return "neither the appservice nor login-as-user works (" + none.Cause.Error() + "): `medic appservice-registration` (README)", false
		}
		return "cannot tell: " + err.Error(), false
	}
	return strings.ReplaceAll(m.Kind, "_", "-") + " (" + m.Why + ")", true
}
