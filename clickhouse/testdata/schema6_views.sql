-- The analyst views as the schema of migrations 1-6 created them (before
-- migration 7): a database made by an earlier release has these, as text.

CREATE VIEW IF NOT EXISTS {db}.examples AS
		SELECT
			event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index,
			chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
			context_numbers, feedback_count,
			multiIf(
				feedback_count = 0, reward_default,
				reward_aggregate = 'first', f_first,
				reward_aggregate = 'last', f_last,
				reward_aggregate = 'max', f_max,
				f_sum) AS reward
		FROM
		(
			SELECT
				event_id, ts, ts_ms, model, kind, version, variant, action_ids, action_keys, probabilities, chosen, chosen_index,
				chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
				context_numbers, reward_default, reward_aggregate
			FROM {db}.decisions FINAL
			WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000
		)
		ANY LEFT JOIN
		(
			SELECT
				event_id,
				count() AS feedback_count,
				argMin(f_reward, f_ts_ms) AS f_first,
				argMax(f_reward, f_ts_ms) AS f_last,
				max(f_reward) AS f_max,
				sum(f_reward) AS f_sum
			FROM
			(
				SELECT event_id, ts_ms AS f_ts_ms, reward AS f_reward
				FROM {db}.feedback FINAL
			)
			ANY INNER JOIN
			(
				SELECT event_id, ts_ms + reward_window_s * 1000 AS deadline_ms
				FROM {db}.decisions FINAL
				WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000
			) USING event_id
			WHERE f_ts_ms <= deadline_ms
			GROUP BY event_id
		) USING event_id
;

CREATE VIEW IF NOT EXISTS {db}.reward_by_version AS
		SELECT
			model, version, variant, toStartOfHour(ts) AS hour,
			count() AS decisions,
			sum(reward) AS reward_sum,
			avg(reward) AS reward_rate,
			countIf(feedback_count > 0) AS with_feedback,
			with_feedback / decisions AS join_rate
		FROM {db}.examples
		GROUP BY model, version, variant, hour
;
