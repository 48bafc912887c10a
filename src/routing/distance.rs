//! Great-circle distance on a spherical Earth: the error against the WGS84 ellipsoid
//! (under 0.5%) is far below what separates one POP from another.

use crate::geo::Coordinates;

/// Mean Earth radius in km (IUGG).
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// A point prepared for repeated distance computations: the trigonometry that depends
/// on one end only is done once per POP, not once per query.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    lat: f64,
    lon: f64,
    cos_lat: f64,
}

impl Point {
    /// Prepares coordinates given in degrees.
    pub fn new(c: Coordinates) -> Self {
        let lat = c.latitude.to_radians();
        Self {
            lat,
            lon: c.longitude.to_radians(),
            cos_lat: lat.cos(),
        }
    }

    /// The point as a unit vector from the Earth's centre: the nearer of two
    /// points is the one whose vector has the larger dot product with this one's
    /// (the great-circle angle is the arc cosine of it), which takes no
    /// trigonometry per pair.
    pub fn unit(&self) -> [f64; 3] {
        [
            self.cos_lat * self.lon.cos(),
            self.cos_lat * self.lon.sin(),
            self.lat.sin(),
        ]
    }

    /// Haversine distance in km.
    pub fn distance_km(&self, other: &Point) -> f64 {
        let dlat = other.lat - self.lat;
        let dlon = other.lon - self.lon;
        let a =
            (dlat * 0.5).sin().powi(2) + self.cos_lat * other.cos_lat * (dlon * 0.5).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latitude: f64, longitude: f64) -> Point {
        Point::new(Coordinates {
            latitude,
            longitude,
        })
    }

    #[test]
    fn known_distances() {
        // Frankfurt - London is about 636 km, Tokyo - Sydney about 7,820 km.
        let fra = at(50.1109, 8.6821);
        let lhr = at(51.5074, -0.1278);
        let nrt = at(35.6762, 139.6503);
        let syd = at(-33.8688, 151.2093);
        assert!(
            (fra.distance_km(&lhr) - 636.0).abs() < 5.0,
            "{}",
            fra.distance_km(&lhr)
        );
        assert!(
            (nrt.distance_km(&syd) - 7_820.0).abs() < 30.0,
            "{}",
            nrt.distance_km(&syd)
        );
        assert_eq!(fra.distance_km(&fra), 0.0);
    }

    #[test]
    fn antipodes_do_not_overflow() {
        let d = at(0.0, 0.0).distance_km(&at(0.0, 180.0));
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0);
    }
}
