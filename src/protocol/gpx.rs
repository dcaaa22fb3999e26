//! A session's trails as GPX 1.1 (written by the `gpx` crate): one track per participant,
//! named after them, one segment of their points in time order.

use crate::domain::TrailPoint;

/// The GPX document of `tracks` (a name and its points each), for a session named `name`.
pub fn trails_gpx(
    name: Option<&str>,
    tracks: &[(String, Vec<TrailPoint>)],
) -> Result<Vec<u8>, gpx::errors::GpxError> {
    let mut document = gpx::Gpx {
        version: gpx::GpxVersion::Gpx11,
        creator: Some("convoy".into()),
        metadata: Some(gpx::Metadata { name: name.map(xml_text), ..gpx::Metadata::default() }),
        ..gpx::Gpx::default()
    };
    for (name, points) in tracks {
        let mut segment = gpx::TrackSegment::new();
        segment.points = points
            .iter()
            .map(|point| {
                let mut waypoint = gpx::Waypoint::new(geo_types::Point::new(point.lng, point.lat));
                waypoint.time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
                    point.at.timestamp_nanos_opt().unwrap_or_default(),
                ))
                .ok()
                .map(gpx::Time::from);
                waypoint
            })
            .collect();
        let mut track = gpx::Track::new();
        track.name = Some(xml_text(name));
        track.segments.push(segment);
        document.tracks.push(track);
    }
    let mut out = Vec::new();
    gpx::write(&document, &mut out)?;
    Ok(out)
}

/// `text` without the characters XML 1.0 cannot hold (a name may carry U+FFFE).
fn xml_text(text: &str) -> String {
    text.chars()
        .filter(|&c| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn the_document_reads_back_with_every_point() {
        let at = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let ann = vec![
            TrailPoint { lat: 48.1, lng: 2.1, at: at(0) },
            TrailPoint { lat: 48.2, lng: 2.2, at: at(30) },
        ];
        let tracks = vec![("Ann & <Bob>\u{FFFE}".to_owned(), ann), ("Cat".to_owned(), vec![])];
        let bytes = trails_gpx(Some("Trip"), &tracks).unwrap();
        let read = gpx::read(bytes.as_slice()).unwrap();
        assert_eq!(read.version, gpx::GpxVersion::Gpx11);
        assert_eq!(read.tracks.len(), 2);
        assert_eq!(read.tracks[0].name.as_deref(), Some("Ann & <Bob>"));
        let points = &read.tracks[0].segments[0].points;
        assert_eq!(points.len(), 2);
        assert_eq!((points[1].point().y(), points[1].point().x()), (48.2, 2.2));
        let when: time::OffsetDateTime = points[1].time.unwrap().into();
        assert_eq!(when.unix_timestamp(), 1_800_000_030);
    }
}
