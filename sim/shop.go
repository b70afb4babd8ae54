package sim

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/flywheel-dev/flywheel"
)

// Shop is the second world, "shop": a catalogue of 150 products of which a
// request offers a random 20, to users who differ by income and arrive at
// any hour. The truth is a logistic model with two effects of one
// continuous feature that depend on another: the price a user likes best
// grows with their income (a 20-dollar item suits a low income, a 300-dollar
// one a high income, and a price far from the liked one in either direction
// costs clicks), and each category has its hour of the day (gadgets late at
// night, groceries in the morning), a cyclic effect. Products also differ in
// a quality the requests do not show. So no single item or category is best:
// the best offer depends on income × price and hour × category, which a
// linear model on the raw features (income, hour, price) can only
// approximate; tuning to the homepage world (segments × categories, all
// items offered) shows here.
type Shop struct {
	Items []ShopItem
	peak  map[string]float64 // category → hour of the day it is most wanted
	amp   map[string]float64 // category → strength of its hour effect
	acts  []flywheel.Action  // each item as an action, shared read-only
}

// ShopItem is one product of the shop.
type ShopItem struct {
	ID       string
	Category string
	Price    float64
	Quality  float64
}

// Shop's sizes.
const (
	shopItems   = 150
	shopOffered = 20
)

// NewShop builds the shop's ground truth for a seed.
func NewShop(seed uint64) *Shop {
	rng := rand.New(rand.NewPCG(seed, 0x5409))
	s := &Shop{peak: map[string]float64{}, amp: map[string]float64{}}
	cats := []string{"electronics", "fashion", "home", "books", "toys", "sports", "beauty", "grocery"}
	for i, c := range cats {
		s.peak[c] = math.Mod(float64(i)*3+rng.Float64()*2, 24)
		s.amp[c] = 0.6 + 0.8*rng.Float64()
	}
	for i := 0; i < shopItems; i++ {
		s.Items = append(s.Items, ShopItem{
			ID: fmt.Sprintf("sku-%03d", i), Category: cats[rng.IntN(len(cats))],
			Price:   math.Round(math.Exp(math.Log(5)+rng.Float64()*math.Log(100))*100) / 100, // 5 to 500, log-uniform
			Quality: rng.Float64(),
		})
	}
	for _, it := range s.Items {
		s.acts = append(s.acts, flywheel.Action{ID: it.ID, Features: flywheel.Features{"item": {"id": it.ID, "category": it.Category, "price": it.Price}}})
	}
	return s
}

// Name returns "shop".
func (s *Shop) Name() string { return "shop" }

// ClickProbability is the truth for a user of income (thousands a year) at
// hour (0 to 24) shown item.
func (s *Shop) ClickProbability(income, hour float64, it ShopItem) float64 {
	liked := 1.5 * income // the price, in dollars, this income likes best
	d := math.Log(it.Price / liked)
	h := 2 * math.Pi * (hour - s.peak[it.Category]) / 24
	logit := -1.6 + 1.2*it.Quality - 0.6*d*d + s.amp[it.Category]*math.Cos(h)
	return 1 / (1 + math.Exp(-logit))
}

// Draw returns a user (income log-normal around 50 thousand, hour uniform)
// and a random 20 of the items. The actions' features are shared: the
// caller must not modify them.
func (s *Shop) Draw(rng *rand.Rand) (flywheel.Features, []flywheel.Action, []float64) {
	income := math.Min(math.Max(math.Round(math.Exp(math.Log(50)+0.7*rng.NormFloat64())), 8), 500)
	hour := math.Round(rng.Float64()*240) / 10
	if hour == 24 {
		hour = 0
	}
	ctx := flywheel.Features{"user": {"income": income, "hour": hour}}
	actions := make([]flywheel.Action, 0, shopOffered)
	truth := make([]float64, 0, shopOffered)
	// A partial Fisher–Yates shuffle of the indexes: 20 distinct items.
	idx := make([]int, len(s.Items))
	for i := range idx {
		idx[i] = i
	}
	for i := 0; i < shopOffered; i++ {
		j := i + rng.IntN(len(idx)-i)
		idx[i], idx[j] = idx[j], idx[i]
		it := s.Items[idx[i]]
		actions = append(actions, s.acts[idx[i]])
		truth = append(truth, s.ClickProbability(income, hour, it))
	}
	return ctx, actions, truth
}
