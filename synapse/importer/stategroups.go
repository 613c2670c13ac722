package importer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

type stateMap map[[2]string]string

func (s stateMap) hash() string {
	keys := make([][2]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", k[0], k[1], s[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loadGraphs reads both databases' state groups of the room (once per Importer).
func (im *Importer) loadGraphs(ctx context.Context) error {
	if im.srcGraph != nil {
		return nil
	}
	g, err := im.Src.StateGroups(ctx, im.RoomID)
	if err != nil {
		return err
	}
	tg, err := im.targetStateGroups(ctx)
	if err != nil {
		return err
	}
	im.tgtFull = map[int64]stateMap{}
	im.tgtByHash = map[string]int64{}
	for sg := range tg.Event {
		full, err := fullState(tg, sg, im.tgtFull)
		if err != nil {
			return fmt.Errorf("target state group %d: %w", sg, err)
		}
		h := full.hash()
		if old, ok := im.tgtByHash[h]; !ok || sg < old {
			im.tgtByHash[h] = sg
		}
	}
	im.srcGraph, im.srcFull, im.srcToTgt = g, map[int64]stateMap{}, map[int64]int64{}
	return nil
}

func (im *Importer) targetStateGroups(ctx context.Context) (*StateGraph, error) {
	g := &StateGraph{Event: map[int64]string{}, Parent: map[int64]int64{}, Delta: map[int64][]StateEntry{}}
	rows, err := im.DB.Pool.Query(ctx, importTargetStateGroupsQuery, im.RoomID)
	if err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	var sg int64
	var ev string
	var prevNull *int64
	if _, err = pgx.ForEachRow(rows, []any{&sg, &ev, &prevNull}, func() error {
		g.Event[sg] = ev
		if prevNull != nil {
			g.Parent[sg] = *prevNull
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read state groups: %w", err)
	}
	ids := make([]int64, 0, len(g.Event))
	for id := range g.Event {
		ids = append(ids, id)
	}
	rows, err = im.DB.Pool.Query(ctx, importTargetDeltasQuery, ids)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var e StateEntry
	if _, err = pgx.ForEachRow(rows, []any{&sg, &e.Type, &e.StateKey, &e.EventID}, func() error {
		g.Delta[sg] = append(g.Delta[sg], e)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	return g, nil
}

// fullState resolves a state group's full state from its delta chain (memoised).
func fullState(g *StateGraph, sg int64, memo map[int64]stateMap) (stateMap, error) {
	if s, ok := memo[sg]; ok {
		return s, nil
	}
	var chain []int64
	for cur := sg; ; {
		if _, ok := memo[cur]; ok {
			break
		}
		if _, ok := g.Event[cur]; !ok {
			return nil, fmt.Errorf("state group %d is missing", cur)
		}
		chain = append(chain, cur)
		p, ok := g.Parent[cur]
		if !ok {
			break
		}
		cur = p
		if len(chain) > 100000 {
			return nil, errors.New("state group chain loops")
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		cur := chain[i]
		s := stateMap{}
		if p, ok := g.Parent[cur]; ok {
			for k, v := range memo[p] {
				s[k] = v
			}
		}
		for _, e := range g.Delta[cur] {
			s[[2]string{e.Type, e.StateKey}] = e.EventID
		}
		memo[cur] = s
	}
	return memo[sg], nil
}

// newGroup is a state group to create in the target.
type newGroup struct {
	id, parent int64 // parent 0: a full snapshot
	event      string
	rows       stateMap
	hash       string
	src        int64
}

// mapGroups maps the source groups to target groups, planning new ones (with ids from the
// target's sequence, in tx) where no target group holds the same state.
func (im *Importer) mapGroups(ctx context.Context, tx pgx.Tx, groups []int64) (map[int64]int64, []newGroup, int, error) {
	mapping := map[int64]int64{}
	var created []newGroup
	deduped := 0
	// Every ancestor's deltas are needed to resolve full states.
	var load []int64
	seen := map[int64]bool{}
	for _, sg := range groups {
		for cur := sg; !seen[cur]; {
			seen[cur] = true
			if _, ok := im.srcFull[cur]; !ok {
				if _, ok := im.srcGraph.Delta[cur]; !ok {
					load = append(load, cur)
				}
			}
			p, ok := im.srcGraph.Parent[cur]
			if !ok {
				break
			}
			cur = p
		}
	}
	if len(load) > 0 {
		if err := im.Src.LoadDeltas(ctx, im.srcGraph, load); err != nil {
			return nil, nil, 0, err
		}
	}
	localByHash := map[string]int64{}
	var resolve func(sg int64) (int64, error)
	resolve = func(sg int64) (int64, error) {
		if t, ok := im.srcToTgt[sg]; ok {
			return t, nil
		}
		if t, ok := mapping[sg]; ok {
			return t, nil
		}
		full, err := fullState(im.srcGraph, sg, im.srcFull)
		if err != nil {
			return 0, fmt.Errorf("source state group %d: %w", sg, err)
		}
		h := full.hash()
		if t, ok := im.tgtByHash[h]; ok {
			mapping[sg] = t
			deduped++
			return t, nil
		}
		if t, ok := localByHash[h]; ok {
			mapping[sg] = t
			deduped++
			return t, nil
		}
		ng := newGroup{event: im.srcGraph.Event[sg], hash: h, src: sg, rows: full}
		if p, ok := im.srcGraph.Parent[sg]; ok {
			tp, err := resolve(p)
			if err != nil {
				return 0, err
			}
			parentState := im.tgtFull[tp]
			if parentState == nil {
				parentState = im.srcFull[p]
			}
			// A delta on the parent's group works when the state only adds or replaces.
			delta, ok := stateMap{}, true
			for k := range parentState {
				if _, has := full[k]; !has {
					ok = false
				}
			}
			if ok {
				for k, v := range full {
					if parentState[k] != v {
						delta[k] = v
					}
				}
				ng.parent, ng.rows = tp, delta
			}
		}
		if err := tx.QueryRow(ctx, importNextStateGroupQuery).Scan(&ng.id); err != nil {
			return 0, fmt.Errorf("allocate a state group id: %w", err)
		}
		mapping[sg] = ng.id
		localByHash[h] = ng.id
		created = append(created, ng)
		return ng.id, nil
	}
	for _, sg := range groups {
		if _, err := resolve(sg); err != nil {
			return nil, nil, 0, err
		}
	}
	return mapping, created, deduped, nil
}

// remember adds a chunk's mapping and new groups to the caches the next chunks map against.
func (im *Importer) remember(mapping map[int64]int64, created []newGroup) {
	for src, tgt := range mapping {
		im.srcToTgt[src] = tgt
	}
	for _, g := range created {
		im.tgtByHash[g.hash] = g.id
		im.tgtFull[g.id] = im.srcFull[g.src]
	}
}
